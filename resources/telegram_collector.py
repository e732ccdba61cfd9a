"""Dagster resource for the Telethon collector (DESIGN §2, source ``telegram``).

Thin on purpose: configuration lives here, the work in
``warehouse.telegram_collect`` so it runs from a notebook too. Credentials are
read from ``TELEGRAM_API_ID``, ``TELEGRAM_API_HASH`` and ``TELEGRAM_SESSION`` at
run time, never stored in resource config (the UI shows config).
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from resources.warehouse import DuckDBWarehouse
from warehouse.telegram_collect import (
    CollectPolicy,
    CollectReport,
    credentials_from_env,
    fetch,
    store,
    telethon_client,
)


class TelegramCollector(dg.ConfigurableResource):
    """Reads channels' messages, counters and subscribers from Telegram into raw tables."""

    channels: list[str] = Field(
        default_factory=list, description="channel usernames (with or without @) or t.me links"
    )
    max_messages: int = Field(default=200, description="newest messages read per channel and run")
    flood_wait_cap_seconds: float = Field(
        default=300.0,
        description="longest rate-limit wait slept out before one retry; longer waits "
        "fail that channel for this run",
    )

    def policy(self) -> CollectPolicy:
        return CollectPolicy(
            max_messages=self.max_messages, flood_wait_cap_seconds=self.flood_wait_cap_seconds
        )

    def collect(self, warehouse: DuckDBWarehouse, now: datetime | None = None) -> CollectReport:
        """Read every configured channel from Telegram, then write it to the warehouse.

        Credentials are checked first (``TelegramCredentialsError`` names the
        missing variable) and the warehouse is opened only after the network
        phase, so DuckDB's single writer slot is not held through flood waits.
        """
        credentials = credentials_from_env()
        now = now or datetime.now(UTC)
        reads = []
        if self.channels:
            with telethon_client(credentials) as client:
                reads = fetch(client, self.channels, now, self.policy())
        with warehouse.connect() as conn:
            return store(conn, reads, now, self.policy())
