"""Deterministic, seeded generator of a realistic Telegram world (the default data source).

The world is built in causal order so that downstream models find real signal and real
noise in it:

1. channels: audience size, ghost subscribers, reach, an audience activity profile
   (24 h x 7 day curve) from which the true per-slot reach effect is derived;
2. posts: publish times from the owner's habit (often, not always, at good hours),
   topic, media type, text with topic words and virality "hooks";
3. per-post latent effects: reach noise (``quality``), forward multiplier, a second
   view wave for viral posts;
4. subscribers per day: trend, weekly seasonality, churn noise, plus joins driven by
   the forwards of recent posts (so the subscriber series and the posts are coupled);
5. snapshots at collector-like ages: cumulative counters that saturate over ~48 h, with
   accumulation clocked by the audience's wall-clock activity (a 23:00 post gains
   slowly overnight and catches up in the morning);
6. users with personas (active hours, weekdays, action mix, topic taste) whose
   interactions are sampled consistently with the posts' counters.

Everything is numpy-vectorised over posts and snapshots; loops run over channels, days
or personas only. Nothing here imports Dagster.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from warehouse.schema import ACTIONS, MEDIA_TYPES

# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and seed of a synthetic world; ``end`` is the world's "now" (naive UTC)."""

    n_channels: int
    n_days: int
    n_users: int
    posts_per_day: float  # mean per channel (channels vary around it)
    seed: int = 42
    end: datetime = datetime(2026, 11, 1)


SIZES: dict[str, SyntheticConfig] = {
    "tiny": SyntheticConfig(n_channels=3, n_days=30, n_users=60, posts_per_day=3.0),
    "demo": SyntheticConfig(n_channels=20, n_days=180, n_users=2000, posts_per_day=3.0),
    "large": SyntheticConfig(n_channels=200, n_days=365, n_users=20000, posts_per_day=4.0),
}


def config_for(size: str, seed: int = 42) -> SyntheticConfig:
    """The named size (``tiny`` | ``demo`` | ``large``) with the given seed."""
    if size not in SIZES:
        raise ValueError(f"unknown synthetic size {size!r}; expected one of {sorted(SIZES)}")
    return dataclasses.replace(SIZES[size], seed=seed)


# ------------------------------------------------------------------------ constants

# Collector schedule: every 15 min for 3 h, hourly 4..24 h, then 48 h, 72 h, daily to 7 d.
SNAPSHOT_AGES_MINUTES = np.array(
    [*range(15, 181, 15), *range(240, 1441, 60), 2880, 4320, 5760, 7200, 8640, 10080],
    dtype=np.int64,
)
SNAPSHOT_JITTER_SECONDS = 90  # every observation lies within +-1.5 min of its nominal age

TOPICS = ("news", "politics", "crypto", "tech", "memes", "sports", "lifestyle", "promo")
TOPIC_VIRALITY = np.array([1.6, 2.0, 1.3, 0.9, 3.0, 1.1, 0.6, 0.3])  # forward multiplier
TOPIC_REACH = np.array([1.10, 1.05, 0.95, 0.95, 1.15, 1.00, 0.90, 0.70])
TOPIC_REACTIONS = np.array([0.9, 1.2, 1.0, 0.9, 1.6, 1.3, 1.1, 0.4])
TOPIC_REPLIES = np.array([1.2, 2.0, 1.3, 1.1, 0.8, 1.5, 0.8, 0.3])
RELATED_TOPICS = {
    "news": ("politics", "sports"),
    "politics": ("news",),
    "crypto": ("tech", "promo"),
    "tech": ("crypto", "news"),
    "memes": ("sports", "lifestyle"),
    "sports": ("memes", "news"),
    "lifestyle": ("promo", "memes"),
    "promo": ("lifestyle", "crypto"),
}

MEDIA_BASE_MIX = np.array([0.34, 0.36, 0.14, 0.05, 0.04, 0.07])  # order of MEDIA_TYPES
MEDIA_REACH = np.array([1.00, 1.10, 1.25, 0.80, 1.05, 0.90])

# Text "hooks": raise forwards regardless of topic (probability, forward multiplier).
HOOKS = ("breaking", "exclaim", "question", "number", "emoji", "link", "hashtag")
HOOK_BASE_P = np.array([0.06, 0.14, 0.14, 0.12, 0.22, 0.10, 0.15])
HOOK_FORWARD = np.array([2.0, 1.35, 1.2, 1.5, 1.2, 0.75, 1.0])
HOOK_TOPIC_P = {  # topic-specific tilt of hook probabilities (default 1)
    "news": {"breaking": 3.0, "link": 1.5},
    "politics": {"breaking": 2.0, "question": 1.5},
    "crypto": {"breaking": 1.5, "number": 2.0, "emoji": 1.5},
    "tech": {"number": 1.3, "link": 1.5},
    "memes": {"breaking": 0.3, "exclaim": 1.5, "emoji": 2.0},
    "sports": {"exclaim": 1.5, "number": 1.2},
    "lifestyle": {"breaking": 0.3, "question": 1.3},
    "promo": {"breaking": 0.3, "exclaim": 2.0, "number": 2.0, "link": 4.0},
}

PERSONAS = (
    "night_owl",
    "morning_commuter",
    "weekend_reader",
    "lurker_reactor",
    "active_commenter",
    "sharer",
)
PERSONA_SHARES = np.array([0.17, 0.22, 0.13, 0.28, 0.08, 0.12])
# (peak hour UTC, sd hours, weight) bumps of each persona's 24 h activity
PERSONA_HOURS = (
    ((23.5, 1.8, 1.0), (2.0, 1.5, 0.5)),
    ((7.5, 1.2, 1.0), (17.5, 1.3, 0.55)),
    ((13.0, 3.0, 1.0),),
    ((12.5, 3.5, 1.0), (20.0, 2.0, 0.6)),
    ((20.0, 1.8, 1.0), (9.0, 1.5, 0.25)),
    ((11.0, 1.5, 1.0), (15.5, 1.5, 0.8)),
)
PERSONA_WEEKDAYS = np.array(
    [
        [0.9, 0.9, 0.9, 1.0, 1.2, 1.5, 1.3],
        [1.4, 1.4, 1.4, 1.4, 1.3, 0.3, 0.25],
        [0.45, 0.45, 0.45, 0.5, 0.7, 2.4, 2.3],
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        [1.1, 1.1, 1.1, 1.1, 1.0, 0.8, 0.9],
        [1.2, 1.2, 1.2, 1.2, 1.1, 0.7, 0.6],
    ]
)
PERSONA_ACTIONS = np.array(  # order of ACTIONS: reaction, reply, forward
    [
        [0.55, 0.30, 0.15],
        [0.70, 0.08, 0.22],
        [0.55, 0.15, 0.30],
        [0.93, 0.03, 0.04],
        [0.25, 0.68, 0.07],
        [0.25, 0.10, 0.65],
    ]
)
PERSONA_TOPICS = np.array(  # taste per topic, order of TOPICS
    [
        [0.5, 0.5, 2.0, 1.5, 2.0, 0.5, 0.4, 0.3],
        [2.0, 1.5, 0.8, 1.2, 0.4, 0.6, 0.5, 0.3],
        [0.5, 0.3, 0.3, 0.4, 1.0, 2.0, 2.0, 0.5],
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.6],
        [1.5, 2.0, 0.8, 0.8, 0.5, 2.0, 0.5, 0.2],
        [1.5, 1.0, 1.5, 0.8, 2.0, 1.0, 0.6, 0.3],
    ]
)

# ------------------------------------------------------------------------ text bank

_GENERIC = {
    "N": "people week day story update thing news everyone world time reason plan "
    "result question detail moment city market".split(),
    "V": "changed happened started ended grew dropped returned moved went".split(),
    "A": "new big real major latest main first simple huge important".split(),
    "G": ["today", "now", "again", "finally", "this week", "tonight", "so far", "already"],
}
_VOCAB = {
    "news": {
        "N": "report officials police storm ministry residents incident statement agency "
        "court airport protest city traffic fire".split(),
        "V": "confirmed reported announced warned said denied closed opened".split(),
        "A": "local urgent official major national".split(),
    },
    "politics": {
        "N": "election minister parliament vote party sanctions president policy reform "
        "debate court campaign statement budget coalition".split(),
        "V": "voted promised blocked announced criticized signed proposed denied".split(),
        "A": "opposition national controversial official major".split(),
    },
    "crypto": {
        "N": "bitcoin token wallet exchange price market ETH altcoin blockchain stablecoin "
        "airdrop chart whales DeFi".split(),
        "V": "surged dropped listed launched pumped crashed rallied".split(),
        "A": "bullish bearish decentralized new huge".split(),
    },
    "tech": {
        "N": "AI model startup app update smartphone chip release feature GPU code platform "
        "blockchain server browser".split(),
        "V": "launched released announced shipped leaked tested open-sourced".split(),
        "A": "new open faster beta smart".split(),
    },
    "memes": {
        "N": "cat meme boss monday coffee friend dog mood weekend mom pizza exam teacher "
        "wifi meeting".split(),
        "V": "forgot ate tried ruined won saw ignored".split(),
        "A": "relatable cursed legendary funny sleepy".split(),
    },
    "sports": {
        "N": "match goal team coach season final league player transfer fans record derby "
        "championship stadium score".split(),
        "V": "won lost scored signed beat drew announced".split(),
        "A": "historic last-minute legendary huge local".split(),
    },
    "lifestyle": {
        "N": "recipe coffee workout trip weekend apartment habit sleep garden outfit "
        "morning book city diet hotel".split(),
        "V": "tried found cooked recommended visited started loved".split(),
        "A": "cozy healthy simple perfect seasonal".split(),
    },
    "promo": {
        "N": "discount sale offer giveaway course deal partner bonus channel link app "
        "market price subscription".split(),
        "V": "launched started opened dropped returned ended".split(),
        "A": "exclusive limited free special best".split(),
    },
}
_TEMPLATES = (
    "{A} {N} {V} {G}",
    "the {N} {V} the {N} {G}",
    "{N} {V}: {A} {N} {G}",
    "{G} the {A} {N} {V} again",
    "our {A} {N} just {V}",
    "{A} {N} and {A} {N}",
    "{N} {V} after {K} days of {A} {N}",
    "new {N}: {A} {N} {V}",
    "{G} {N} {V} {A} {N} near the {N}",
    "everyone is talking about the {A} {N}",
    "{N} update, {N} {V} {G}",
    "the {N} {V} and the {N} {V}",
    "after the {A} {N} {V} {G}, the {N} and the {A} {N} {V} too",
    "{G} we {V} the {N}, the {A} {N} and our {N}",
    "nobody expected the {N} to be this {A}, but the {N} {V} {G}",
)
_FILLERS = (
    "honestly",
    "more soon",
    "stay tuned",
    "details below",
    "via our readers",
    "as expected",
    "no comment",
    "read more",
    "share with friends",
    "full story inside",
    "source in comments",
    "photo attached",
)
_BREAKING = ("BREAKING:", "⚡️ Breaking:", "URGENT:", "Just in:")
_QUESTIONS = (
    "What do you think?",
    "Would you try it?",
    "Who saw this coming?",
    "Is this the end of the {N}?",
    "Are you in?",
    "Who else noticed the {N}?",
)
_NUMBER_HOOKS = ("Top {k}:", "{k} reasons why", "+{p}%", "{k}x", "{k} things about")
_TOPIC_EMOJI = {
    "news": ("📰", "🚨", "❗"),
    "politics": ("🏛", "🗳", "⚖️"),
    "crypto": ("🚀", "📈", "💰"),
    "tech": ("💻", "🤖", "📱"),
    "memes": ("😂", "🤣", "💀"),
    "sports": ("⚽️", "🏆", "🔥"),
    "lifestyle": ("☕️", "🌿", "✨"),
    "promo": ("🎁", "💸", "🔥"),
}
_NEUTRAL_EMOJI = ("🙂", "👀", "📌", "👇", "🔥")
_HASHTAGS = {
    "news": ("#news", "#breaking", "#today"),
    "politics": ("#politics", "#election", "#news"),
    "crypto": ("#crypto", "#bitcoin", "#market"),
    "tech": ("#tech", "#AI", "#startup"),
    "memes": ("#memes", "#lol", "#monday"),
    "sports": ("#football", "#sports", "#matchday"),
    "lifestyle": ("#lifestyle", "#recipe", "#weekend"),
    "promo": ("#sale", "#giveaway", "#ad"),
}
_LINK_HOSTS = ("t.me/joinchat", "example.com/post", "news.example.org/a", "bit.ly")
_NAME_ADJ = ("daily", "insider", "global", "smart", "crazy", "fresh", "urban", "deep", "quick")
_NAME_SUFFIX = ("pulse", "digest", "hub", "today", "wire", "club", "lab", "talk", "radar")

_SLOT_RE = re.compile(r"\{([A-Z])\}")
_TEMPLATE_TOKENS = tuple(tuple(_SLOT_RE.split(t)) for t in _TEMPLATES)  # odd items = slots
_MAX_SLOTS = max(len(t) // 2 for t in _TEMPLATE_TOKENS)


# ------------------------------------------------------------------------- the world


@dataclass
class SyntheticWorld:
    """Raw tables plus the ground truth the synthetic source knows about them."""

    channels: pd.DataFrame
    posts: pd.DataFrame
    post_snapshots: pd.DataFrame
    channel_daily: pd.DataFrame
    interactions: pd.DataFrame
    truth_channels: pd.DataFrame
    truth_slot_effects: pd.DataFrame
    truth_topics: pd.DataFrame
    truth_posts: pd.DataFrame
    truth_users: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        """Frames keyed by qualified table name (``raw.posts``, ``truth.users``, ...)."""
        return {
            "raw.channels": self.channels,
            "raw.posts": self.posts,
            "raw.post_snapshots": self.post_snapshots,
            "raw.channel_daily": self.channel_daily,
            "raw.interactions": self.interactions,
            "truth.channels": self.truth_channels,
            "truth.slot_effects": self.truth_slot_effects,
            "truth.topics": self.truth_topics,
            "truth.posts": self.truth_posts,
            "truth.users": self.truth_users,
        }


@dataclass
class _Clock:
    """The observation window: from midnight ``n_days`` before ``end`` up to ``end``.

    Times are kept as seconds since ``start``; ``n_days`` counts calendar days touched
    (one more than the config's when ``end`` is not at midnight).
    """

    start: np.datetime64  # window start (a midnight), seconds resolution
    end_s: int  # config.end, seconds since start
    n_days: int
    weekday0: int  # weekday of the first day, 0 = Monday

    def weekday(self, day: np.ndarray) -> np.ndarray:
        return (self.weekday0 + day) % 7

    def timestamps(self, seconds: np.ndarray) -> np.ndarray:
        """Seconds since window start -> naive-UTC datetime64[ns]."""
        return (self.start + seconds.astype("timedelta64[s]")).astype("datetime64[ns]")


@dataclass
class _Channels:
    """Per-channel parameters (arrays indexed by channel position)."""

    ids: np.ndarray
    usernames: list[str]
    titles: list[str]
    created_s: np.ndarray  # seconds relative to window start (negative)
    subs0: np.ndarray
    growth: np.ndarray
    season: np.ndarray  # (n, 7) additive daily growth by weekday
    churn_sd: np.ndarray
    conversion: np.ndarray  # new subscribers per forward
    is_ghost: np.ndarray
    ghost_share: np.ndarray
    reach: np.ndarray
    tau: np.ndarray
    shape_k: np.ndarray
    slow_w: np.ndarray
    fwd_rate: np.ndarray
    react_rate: np.ndarray
    reply_rate: np.ndarray
    media_mix: np.ndarray  # (n, 6)
    topic_mix: np.ndarray  # (n, 8)
    activity: np.ndarray  # (n, 168) audience activity by hour of week, mean 1
    slot_effect: np.ndarray  # (n, 168) multiplicative reach effect, mean 1
    post_rate: np.ndarray
    post_hour_p: np.ndarray  # (n, 24)
    post_weekday: np.ndarray  # (n, 7) posting-rate multiplier, mean 1
    sentences_p: np.ndarray  # P(extra sentence), writing style
    hook_bias: np.ndarray

    @property
    def n(self) -> int:
        return len(self.ids)


@dataclass
class _Posts:
    """Per-post arrays, sorted by (channel, publish time)."""

    ch: np.ndarray
    post_id: np.ndarray
    pub_s: np.ndarray
    day: np.ndarray
    how: np.ndarray  # hour of week of publication
    topic: np.ndarray
    media: np.ndarray
    hooks: np.ndarray  # (m, len(HOOKS)) bool
    text: list[str]
    quality: np.ndarray
    unit_reach: np.ndarray  # expected base 48 h views per active subscriber
    fwd_mult: np.ndarray
    react_mult: np.ndarray
    reply_mult: np.ndarray
    tau: np.ndarray
    wave_frac: np.ndarray
    wave_delay: np.ndarray
    wave_tau: np.ndarray

    @property
    def m(self) -> int:
        return len(self.ch)


# ------------------------------------------------------------------------- helpers


def _streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent random streams per stage, so one stage's draws never shift another's."""
    names = ("channels", "posts", "text", "effects", "subs", "snapshots", "users", "acts")
    seqs = np.random.SeedSequence(seed).spawn(len(names))
    return {name: np.random.default_rng(s) for name, s in zip(names, seqs, strict=True)}


def _circular_bump(hours: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Gaussian bump on the 24 h circle (so a 23:00 peak spills into 01:00)."""
    d = (hours - mu + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / sd) ** 2)


def _inverse_cdf(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Vectorised categorical draw: row i of ``probs`` (unnormalised) with uniform u[i]."""
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    return np.minimum((u[:, None] > cdf).sum(axis=1), probs.shape[1] - 1)


def _group_rank(sorted_keys: np.ndarray) -> np.ndarray:
    """0-based position of each row within its run of equal (already sorted) keys."""
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    start_idx = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    return np.arange(n) - start_idx


def _noise_log_mean(scale: float, clip: float) -> float:
    """log E[exp(eps)] of the clipped student-t reach noise, to centre quality at mean 1."""
    eps = np.clip(scale * np.random.default_rng(0).standard_t(3, 400_000), -clip, clip)
    return float(np.log(np.exp(eps).mean()))


_QUALITY_SCALE, _QUALITY_CLIP = 0.35, 1.5
_QUALITY_SHIFT = _noise_log_mean(_QUALITY_SCALE, _QUALITY_CLIP)


# ------------------------------------------------------------------------ channels


def _audience_activity(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 168) activity by hour of week: channel peak hour(s) x weekday curve, mean 1."""
    hours = np.arange(24) + 0.5
    peak = rng.uniform(5.0, 21.0, n)
    second = (peak + rng.choice([-1, 1], n) * rng.uniform(5.0, 10.0, n)) % 24
    hourly = (
        0.12
        + _circular_bump(hours[None, :], peak[:, None], rng.uniform(1.8, 3.5, n)[:, None])
        + rng.uniform(0.2, 0.7, n)[:, None]
        * _circular_bump(hours[None, :], second[:, None], rng.uniform(1.5, 3.0, n)[:, None])
    )
    days = np.arange(7)
    peak_day = rng.uniform(0, 7, n)
    amp = rng.uniform(0.08, 0.35, n)
    weekly = 1.0 + amp[:, None] * np.cos(2 * np.pi * (days[None, :] - peak_day[:, None]) / 7)
    act = (weekly[:, :, None] * hourly[:, None, :]).reshape(n, 168)
    return act / act.mean(axis=1, keepdims=True)


def _slot_effects(activity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """True reach effect of publishing in each hour of week.

    A post is seen by whoever is active in its first hours, so the raw effect is the
    decay-weighted mean activity over the 12 hours after publication; it is then
    sharpened/flattened so best/worst is 2-3x and normalised to mean 1.
    """
    lags = np.arange(12)
    weights = np.exp(-(lags + 0.5) / 3.0)
    raw = sum(w * np.roll(activity, -lag, axis=1) for lag, w in zip(lags, weights, strict=True))
    log_raw = np.log(raw / weights.sum())
    target = rng.uniform(2.0, 3.0, len(activity))
    alpha = np.log(target) / (log_raw.max(axis=1) - log_raw.min(axis=1))
    eff = np.exp(alpha[:, None] * (log_raw - log_raw.mean(axis=1, keepdims=True)))
    return eff / eff.mean(axis=1, keepdims=True)


def _curve_tail_weight(tau: np.ndarray, k: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """Weight of the slow linear component so that views(7 d) / views(48 h) = ratio."""
    f48 = 1 - np.exp(-((48.0 / tau) ** k))
    f168 = 1 - np.exp(-((168.0 / tau) ** k))
    s48, s168 = 48.0 / 168.0, 1.0
    w = (ratio * f48 - f168) / ((s168 - f168) - ratio * (s48 - f48))
    return np.clip(w, 0.0, 0.9)  # stays in range for the tau/k ranges drawn; clip for safety


def _half_life(tau: np.ndarray, k: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Hours to reach half of the 48 h views at neutral (flat) audience activity."""
    t = np.linspace(0.0, 48.0, 4801)[None, :]
    g = (1 - w[:, None]) * (1 - np.exp(-((t / tau[:, None]) ** k[:, None]))) + w[:, None] * t / 168
    g /= g[:, -1:]
    return t[0, np.argmax(g >= 0.5, axis=1)]


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    """Positive, right-skewed draws (sizes and rates are multiplicative in reality)."""
    return median * np.exp(sigma * rng.standard_normal(n))


def _channel_names(rng: np.random.Generator, main_topic: np.ndarray) -> tuple[list, list]:
    """Unique usernames and titles that hint at (but do not define) the channel's topic."""
    usernames, titles, seen = [], [], set()
    adj = rng.integers(0, len(_NAME_ADJ), len(main_topic))
    suf = rng.integers(0, len(_NAME_SUFFIX), len(main_topic))
    for i, t in enumerate(main_topic):
        words = (_NAME_ADJ[adj[i]], TOPICS[t], _NAME_SUFFIX[suf[i]])
        name = "_".join(words)
        if name in seen:
            name = f"{name}{i + 1}"
        seen.add(name)
        usernames.append(name)
        titles.append(" ".join(w.capitalize() for w in words))
    return usernames, titles


def _topic_mix(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each channel: a main topic, a related second one, some ads, a sprinkle of the rest."""
    n_t = len(TOPICS)
    main = rng.integers(0, n_t - 1, n)  # promo is never a main topic
    mix = rng.dirichlet(np.full(n_t, 0.6), n) * 0.15
    for i in range(n):
        related = RELATED_TOPICS[TOPICS[main[i]]]
        second = TOPICS.index(related[rng.integers(0, len(related))])
        mix[i, main[i]] += rng.uniform(0.45, 0.7)
        mix[i, second] += rng.uniform(0.1, 0.25)
    mix[:, TOPICS.index("promo")] += rng.uniform(0.03, 0.1, n)
    return mix / mix.sum(axis=1, keepdims=True), main


def _make_channels(cfg: SyntheticConfig, rng: np.random.Generator) -> _Channels:
    """Draw every channel-level parameter."""
    n = cfg.n_channels
    topic_mix, main_topic = _topic_mix(rng, n)
    usernames, titles = _channel_names(rng, main_topic)

    n_ghost = max(1, round(0.25 * n)) if n >= 2 else 0
    is_ghost = np.zeros(n, dtype=bool)
    is_ghost[rng.permutation(n)[:n_ghost]] = True
    ghost_share = np.where(is_ghost, rng.uniform(0.4, 0.8, n), rng.uniform(0.02, 0.12, n))
    # bot-inflated channels also tend to have weaker content: lower reach among real readers
    reach = np.where(is_ghost, rng.uniform(0.1, 0.35, n), rng.uniform(0.15, 0.6, n))
    subs0 = np.clip(_lognormal(rng, 15_000, 1.2, n), 1_000, 500_000)
    subs0 = np.where(is_ghost, np.minimum(subs0 * 2.0, 500_000), subs0)

    growth = np.clip(rng.normal(0.0008, 0.0012, n), -0.0015, 0.003)
    growth[rng.random(n) < 0.15] = 0.0  # some channels are flat
    season_amp = rng.uniform(0.0, 0.0015, n)
    season = season_amp[:, None] * np.cos(
        2 * np.pi * (np.arange(7)[None, :] - rng.uniform(0, 7, n)[:, None]) / 7
    )

    tau = np.clip(_lognormal(rng, 4.0, 0.4, n), 1.5, 10.0)
    shape_k = rng.uniform(0.7, 1.3, n)
    slow_w = _curve_tail_weight(tau, shape_k, rng.uniform(1.2, 1.4, n))

    reply_rate = np.clip(_lognormal(rng, 0.002, 0.7, n), 2e-4, 0.02)
    reply_rate[rng.random(n) < 0.15] = 0.0  # comments disabled
    activity = _audience_activity(rng, n)
    slot_effect = _slot_effects(activity, rng)

    # posting habit: partly at the audience's good hours, partly the owner's own schedule
    hourly_audience = activity.reshape(n, 7, 24).mean(axis=1) ** 2
    hourly_audience /= hourly_audience.sum(axis=1, keepdims=True)
    owner_peak, owner_sd = rng.uniform(8, 20, n)[:, None], rng.uniform(2, 4.5, n)[:, None]
    owner = _circular_bump(np.arange(24)[None, :] + 0.5, owner_peak, owner_sd)
    owner /= owner.sum(axis=1, keepdims=True)
    p_good = rng.uniform(0.3, 0.65, n)[:, None]
    post_hour_p = p_good * hourly_audience + (0.93 - p_good) * owner + 0.07 / 24
    weekday_pref = 1.0 + rng.uniform(-0.4, 0.1, n)[:, None] * (np.arange(7) >= 5)[None, :]
    post_weekday = weekday_pref / weekday_pref.mean(axis=1, keepdims=True)
    rate = np.exp(0.5 * rng.standard_normal(n))
    post_rate = cfg.posts_per_day * rate / rate.mean()

    start_s = -86400.0 * rng.uniform(30, 1500, n)
    return _Channels(
        ids=np.arange(1001, 1001 + n, dtype=np.int64),
        usernames=usernames,
        titles=titles,
        created_s=np.floor(start_s).astype(np.int64),
        subs0=subs0,
        growth=growth,
        season=season,
        churn_sd=rng.uniform(0.0005, 0.002, n),
        conversion=np.clip(_lognormal(rng, 0.1, 0.5, n), 0.03, 0.3),
        is_ghost=is_ghost,
        ghost_share=ghost_share,
        reach=reach,
        tau=tau,
        shape_k=shape_k,
        slow_w=slow_w,
        fwd_rate=np.clip(_lognormal(rng, 0.003, 0.6, n), 5e-4, 0.02),
        react_rate=np.clip(_lognormal(rng, 0.015, 0.6, n), 2e-3, 0.08),
        reply_rate=reply_rate,
        media_mix=rng.dirichlet(MEDIA_BASE_MIX * 30, n),
        topic_mix=topic_mix,
        activity=activity,
        slot_effect=slot_effect,
        post_rate=post_rate,
        post_hour_p=post_hour_p,
        post_weekday=post_weekday,
        sentences_p=rng.uniform(0.15, 0.6, n),
        hook_bias=np.exp(0.3 * rng.standard_normal(n)),
    )


# --------------------------------------------------------------------------- posts


def _publish_times(ch: _Channels, clock: _Clock, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Posts per channel-day (over-dispersed Poisson) and their publish second, sorted."""
    n, days = ch.n, clock.n_days
    wd = clock.weekday(np.arange(days))
    lam = ch.post_rate[:, None] * ch.post_weekday[:, wd] * rng.gamma(4.0, 0.25, (n, days))
    counts = rng.poisson(lam).ravel()
    post_ch = np.repeat(np.repeat(np.arange(n), days), counts)
    day = np.repeat(np.tile(np.arange(days), n), counts)
    hour = _inverse_cdf(ch.post_hour_p[post_ch], rng.random(len(day)))
    pub_s = day * 86400 + hour * 3600 + rng.integers(0, 3600, len(day))
    order = np.lexsort((pub_s, post_ch))
    order = order[pub_s[order] < clock.end_s]  # nothing is published after "now"
    return post_ch[order], pub_s[order].astype(np.int64)


def _post_ids(post_ch: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Increasing ids per channel, continuing the channel's older history, with small gaps."""
    m = len(post_ch)
    inc = 1 + (rng.random(m) < 0.04) * rng.integers(1, 4, m)
    cum = np.cumsum(inc)
    first = np.searchsorted(post_ch, np.arange(n))
    before = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0)
    start = rng.integers(50, 5000, n)
    return (start[post_ch] + cum - before[post_ch]).astype(np.int64)


def _draw_hooks(
    ch: _Channels, post_ch: np.ndarray, topic: np.ndarray, media: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Which virality hooks each post carries; topics and channels differ in their habits."""
    tilt = np.ones((len(TOPICS), len(HOOKS)))
    for t, hooks in HOOK_TOPIC_P.items():
        for h, v in hooks.items():
            tilt[TOPICS.index(t), HOOKS.index(h)] = v
    p = np.clip(HOOK_BASE_P[None, :] * tilt[topic] * ch.hook_bias[post_ch, None], 0, 0.9)
    hooks = rng.random(p.shape) < p
    hooks[media == MEDIA_TYPES.index("poll"), HOOKS.index("question")] = True
    return hooks


def _make_posts(
    ch: _Channels, clock: _Clock, rng: np.random.Generator, text_rng: np.random.Generator
) -> tuple:
    """Publish times, ids, topic, media, hooks and text for every post."""
    post_ch, pub_s = _publish_times(ch, clock, rng)
    post_id = _post_ids(post_ch, ch.n, rng)
    m = len(post_ch)
    topic = _inverse_cdf(ch.topic_mix[post_ch], rng.random(m))
    media = _inverse_cdf(ch.media_mix[post_ch], rng.random(m))
    hooks = _draw_hooks(ch, post_ch, topic, media, rng)
    n_sent = 1 + rng.binomial(3, ch.sentences_p[post_ch])
    text = _make_texts(topic, hooks, n_sent, media, text_rng)
    return post_ch, post_id, pub_s, topic, media, hooks, text


# ---------------------------------------------------------------------------- text


def _word_tables() -> tuple[dict, np.ndarray]:
    """Per slot type: one word list per topic plus the generic list (index len(TOPICS))."""
    tables = {s: [_VOCAB[t][s] for t in TOPICS] + [_GENERIC[s]] for s in ("N", "V", "A")}
    related = np.zeros((len(TOPICS), 2), dtype=np.int64)
    for i, t in enumerate(TOPICS):
        rel = RELATED_TOPICS[t]
        related[i] = [TOPICS.index(rel[0]), TOPICS.index(rel[-1])]
    return tables, related


def _make_texts(
    topic: np.ndarray, hooks: np.ndarray, n_sent: np.ndarray, media: np.ndarray, rng: np.random.Generator
) -> list[str]:
    """Short posts from shared templates; words mostly from the topic, often not.

    All random draws are made up front as arrays; the per-post loop only indexes them
    and joins strings (posts, not snapshots, so this stays cheap).
    """
    m = len(topic)
    tables, related = _word_tables()
    generic_idx = len(TOPICS)
    shape = (m, 4, _MAX_SLOTS)
    # word source per slot: own topic 60 %, related 18 %, any topic 5 %, generic 17 %
    src_u = rng.random(shape)
    rel_pick = related[topic[:, None, None], rng.integers(0, 2, shape)]
    any_topic = rng.integers(0, len(TOPICS), shape)
    source = np.where(
        src_u < 0.60,
        topic[:, None, None],
        np.where(src_u < 0.78, rel_pick, np.where(src_u < 0.83, any_topic, generic_idx)),
    )
    word_u = rng.random(shape)
    templ = rng.integers(0, len(_TEMPLATES), (m, 4))
    numbers = rng.integers(2, 15, (m, 4))
    generic_g = rng.integers(0, len(_GENERIC["G"]), shape)
    n_fill = rng.binomial(3, 0.2, m)
    fill = rng.integers(0, len(_FILLERS), (m, 4))
    variant = rng.integers(0, 1000, (m, 8))
    plain_bang = rng.random(m) < 0.05
    neutral_emoji = rng.random(m) < 0.12
    other_tag = rng.random(m) < 0.3
    hook_at = {h: hooks[:, i] for i, h in enumerate(HOOKS)}

    def word(kind: str, i: int, s: int, j: int) -> str:
        if kind == "K":
            return str(numbers[i, s])
        if kind == "G":
            return _GENERIC["G"][generic_g[i, s, j]]
        lst = tables[kind][source[i, s, j]]
        return lst[int(word_u[i, s, j] * len(lst))]

    texts = []
    for i in range(m):
        t = TOPICS[topic[i]]
        v = variant[i]
        sentences = []
        for s in range(n_sent[i]):
            tokens = _TEMPLATE_TOKENS[templ[i, s]]
            parts = [tok if j % 2 == 0 else word(tok, i, s, j // 2) for j, tok in enumerate(tokens)]
            sent = "".join(parts).strip()
            sentences.append(sent[0].upper() + sent[1:])
        if hook_at["number"][i]:
            phrase = _NUMBER_HOOKS[v[0] % len(_NUMBER_HOOKS)].format(k=3 + v[1] % 10, p=10 + v[1])
            sentences[0] = f"{phrase} {sentences[0][0].lower()}{sentences[0][1:]}"
        ends = ["."] * len(sentences)
        if hook_at["exclaim"][i]:
            ends[-1] = "!!!" if v[2] % 2 else "!!"
        elif plain_bang[i]:
            ends[0] = "!"
        body = [f"{s}{e}" for s, e in zip(sentences, ends, strict=True)]
        body += [_FILLERS[fill[i, f]].capitalize() + "." for f in range(n_fill[i])]
        if sum(map(len, body)) < 40:  # very short posts still carry a caption line
            body.append(_FILLERS[fill[i, 3]].capitalize() + ".")
        if media[i] == MEDIA_TYPES.index("poll"):
            body.insert(0, "Poll:")
        if hook_at["question"][i]:
            n_word = tables["N"][topic[i]][v[3] % len(tables["N"][topic[i]])]
            body.append(_QUESTIONS[v[4] % len(_QUESTIONS)].format(N=n_word))
        if hook_at["breaking"][i]:
            body.insert(0, _BREAKING[v[5] % len(_BREAKING)])
        if hook_at["emoji"][i]:
            pool = _TOPIC_EMOJI[t] if v[6] % 10 < 7 else _NEUTRAL_EMOJI
            body.insert(0 if v[6] % 2 else len(body), pool[v[7] % len(pool)])
        elif neutral_emoji[i]:
            body.append(_NEUTRAL_EMOJI[v[7] % len(_NEUTRAL_EMOJI)])
        if hook_at["hashtag"][i]:
            tag_topic = TOPICS[v[0] % len(TOPICS)] if other_tag[i] else t
            body.append(_HASHTAGS[tag_topic][v[1] % 3])
        if hook_at["link"][i]:
            body.append(f"https://{_LINK_HOSTS[v[2] % len(_LINK_HOSTS)]}/{v[3]:x}{v[4]}")
        texts.append(" ".join(body))
    return texts


# ------------------------------------------------------------------ latent effects


def _post_effects(
    ch: _Channels,
    post_ch: np.ndarray,
    how: np.ndarray,
    topic: np.ndarray,
    media: np.ndarray,
    hooks: np.ndarray,
    text_len: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Per-post multipliers: reach (per active subscriber), forwards, replies, reactions.

    Media, topic and length effects are normalised by the channel's own mix so that
    ``reach`` stays the expected base 48 h views per active subscriber (truth base_reach).
    """
    m = len(post_ch)
    media_eff = MEDIA_REACH[media] / (ch.media_mix @ MEDIA_REACH)[post_ch]
    topic_eff = TOPIC_REACH[topic] / (ch.topic_mix @ TOPIC_REACH)[post_ch]
    len_eff = np.exp(-0.12 * np.log(np.maximum(text_len, 10) / 150.0) ** 2)
    len_mean = np.bincount(post_ch, len_eff, ch.n) / np.maximum(np.bincount(post_ch, None, ch.n), 1)
    len_eff = len_eff / len_mean[post_ch]
    eps = np.clip(_QUALITY_SCALE * rng.standard_t(3, m), -_QUALITY_CLIP, _QUALITY_CLIP)
    quality = eps - _QUALITY_SHIFT
    unit = (
        ch.reach[post_ch] * ch.slot_effect[post_ch, how] * media_eff * topic_eff * len_eff * np.exp(quality)
    )
    hook_mult = np.prod(np.where(hooks, HOOK_FORWARD[None, :], 1.0), axis=1)
    fwd_mult = TOPIC_VIRALITY[topic] * hook_mult * np.exp(0.25 * rng.standard_normal(m))
    question = hooks[:, HOOKS.index("question")]
    emoji = hooks[:, HOOKS.index("emoji")]
    reply_mult = TOPIC_REPLIES[topic] * np.where(question, 1.8, 1.0) * np.exp(0.5 * rng.standard_normal(m))
    react_mult = TOPIC_REACTIONS[topic] * np.where(emoji, 1.3, 1.0) * np.exp(0.3 * rng.standard_normal(m))
    # viral posts (high forward multiplier) get a later second wave of views via forwards
    wave_frac = 0.5 * np.clip(np.log(fwd_mult) - 1.0, 0.0, 2.0)
    return {
        "quality": quality,
        "unit_reach": unit,
        "fwd_mult": fwd_mult,
        "react_mult": react_mult,
        "reply_mult": reply_mult,
        "tau": ch.tau[post_ch] * np.exp(0.3 * rng.standard_normal(m)),
        "wave_frac": wave_frac,
        "wave_delay": rng.uniform(2.0, 10.0, m),
        "wave_tau": rng.uniform(6.0, 18.0, m),
    }


def _cumulative_activity(ch: _Channels, clock: _Clock) -> tuple[np.ndarray, np.ndarray]:
    """Grid of hours since window start and each channel's integrated audience activity."""
    n_hours = clock.n_days * 24 + 24 * 9
    grid = np.arange(n_hours + 1, dtype=np.float64)
    how = (clock.weekday0 * 24 + np.arange(n_hours)) % 168
    cum = np.zeros((ch.n, n_hours + 1))
    cum[:, 1:] = np.cumsum(ch.activity[:, how], axis=1)
    return grid, cum


def _curve(x: np.ndarray, tau, k, w, wave_frac, wave_delay, wave_tau) -> np.ndarray:
    """Un-normalised cumulative views at effective (activity-weighted) age x hours."""
    fast = 1.0 - np.exp(-((x / tau) ** k))
    slow = np.minimum(x / 168.0, 1.0)
    wave = 1.0 - np.exp(-np.maximum(x - wave_delay, 0.0) / wave_tau)
    return (1.0 - w) * fast + w * slow + wave_frac * wave


def _base_curve(x: np.ndarray, tau, k, w) -> np.ndarray:
    """The curve without the viral wave: what "base 48 h views" is normalised against."""
    return (1.0 - w) * (1.0 - np.exp(-((x / tau) ** k))) + w * np.minimum(x / 168.0, 1.0)


def _seven_day_ratio(ch: _Channels, posts: _Posts, grid: np.ndarray, cum: np.ndarray) -> np.ndarray:
    """Expected views at 7 d / base views at 48 h per post (includes the viral wave)."""
    out = np.empty(posts.m)
    pub_h = posts.pub_s / 3600.0
    for c in range(ch.n):
        sl = slice(*np.searchsorted(posts.ch, [c, c + 1]))
        x0 = np.interp(pub_h[sl], grid, cum[c])
        x48 = np.interp(pub_h[sl] + 48, grid, cum[c]) - x0
        x168 = np.interp(pub_h[sl] + 168, grid, cum[c]) - x0
        tau, k, w = posts.tau[sl], ch.shape_k[c], ch.slow_w[c]
        full = _curve(x168, tau, k, w, posts.wave_frac[sl], posts.wave_delay[sl], posts.wave_tau[sl])
        out[sl] = full / _base_curve(x48, tau, k, w)
    return out


# ---------------------------------------------------------------------- subscribers


def _simulate_subscribers(
    ch: _Channels, posts: _Posts, ratio7: np.ndarray, clock: _Clock, rng: np.random.Generator
) -> np.ndarray:
    """(n, days) subscriber counts: trend x weekly season x churn noise + viral joins.

    New subscribers arrive over the 1-3 days after a post, proportional to its forwards,
    and forwards scale with the audience on the post's day: a linear recurrence over days.
    """
    n, days = ch.n, clock.n_days
    fwd_per_active = posts.unit_reach * ratio7 * ch.fwd_rate[posts.ch] * posts.fwd_mult
    joins_per_active = np.bincount(
        posts.ch * days + posts.day, fwd_per_active * ch.conversion[posts.ch], n * days
    ).reshape(n, days)
    lag_w = np.array([0.5, 0.3, 0.2])
    active = 1.0 - ch.ghost_share
    noise = ch.churn_sd[:, None] * rng.standard_normal((n, days))
    season = ch.season[:, clock.weekday(np.arange(days))]
    subs = np.zeros((n, days))
    subs[:, 0] = ch.subs0
    for d in range(1, days):
        joins = np.zeros(n)
        for lag, w in enumerate(lag_w, start=1):
            if d - lag >= 0:
                joins += w * joins_per_active[:, d - lag] * subs[:, d - lag] * active
        rate = 1.0 + ch.growth + season[:, d] + noise[:, d]
        subs[:, d] = np.maximum(subs[:, d - 1] * rate + joins, 50.0)
    return subs


# ------------------------------------------------------------------------ snapshots


@dataclass
class _Snapshots:
    """Snapshot rows (observed by ``end``) plus what interactions need per post."""

    ch: np.ndarray
    post_id: np.ndarray
    obs_s: np.ndarray
    counts: list[np.ndarray]  # contiguous views, forwards, replies, reactions columns
    last_obs_s: np.ndarray  # per post, -1 when never observed
    final: np.ndarray  # per post (m, 4) counters at the last observation


def _poisson_path(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer cumulative counts whose increments are Poisson around the expected path."""
    inc = np.diff(expected, axis=1, prepend=0.0)
    return np.cumsum(rng.poisson(np.maximum(inc, 0.0)), axis=1)


def _channel_snapshots(
    c: int,
    ch: _Channels,
    posts: _Posts,
    sl: slice,
    base_views: np.ndarray,
    grid: np.ndarray,
    cum: np.ndarray,
    clock: _Clock,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observation times and counters (n_posts x n_ages) of one channel's posts."""
    pub_s = posts.pub_s[sl]
    size = (len(pub_s), len(SNAPSHOT_AGES_MINUTES))
    jitter = rng.integers(-SNAPSHOT_JITTER_SECONDS, SNAPSHOT_JITTER_SECONDS + 1, size)
    obs_s = pub_s[:, None] + SNAPSHOT_AGES_MINUTES[None, :] * 60 + jitter
    pub_h = pub_s / 3600.0
    x0 = np.interp(pub_h, grid, cum[c])
    x = np.interp(obs_s / 3600.0, grid, cum[c]) - x0[:, None]
    x48 = np.interp(pub_h + 48, grid, cum[c]) - x0
    x168 = np.interp(pub_h + 168, grid, cum[c]) - x0
    tau, k, w = posts.tau[sl], ch.shape_k[c], ch.slow_w[c]
    wave = (posts.wave_frac[sl], posts.wave_delay[sl], posts.wave_tau[sl])
    norm = base_views / _base_curve(x48, tau, k, w)
    views_exp = norm[:, None] * _curve(x, tau[:, None], k, w, *(a[:, None] for a in wave))
    views7 = norm * _curve(x168, tau, k, w, *wave)
    share = np.clip(views_exp / views7[:, None], 0.0, None)
    totals = {
        "forwards": (views7 * ch.fwd_rate[c] * posts.fwd_mult[sl], 0.85),
        "replies": (views7 * ch.reply_rate[c] * posts.reply_mult[sl], 0.7),
        "reactions": (views7 * ch.react_rate[c] * posts.react_mult[sl], 0.95),
    }
    views = _poisson_path(views_exp, rng)
    counts = [views]
    for total, power in totals.values():  # early interactions front-load vs views
        counts.append(np.minimum(_poisson_path(total[:, None] * share**power, rng), views))
    return obs_s, np.stack(counts, axis=-1), obs_s <= clock.end_s


def _make_snapshots(
    ch: _Channels,
    posts: _Posts,
    subs: np.ndarray,
    activity: tuple[np.ndarray, np.ndarray],
    clock: _Clock,
    rng: np.random.Generator,
) -> _Snapshots:
    """All channels' snapshot rows (only those observed by ``end``) and per-post finals."""
    grid, cum = activity
    active_subs = subs[posts.ch, posts.day] * (1.0 - ch.ghost_share[posts.ch])
    base_views = active_subs * posts.unit_reach
    parts: list[tuple] = []
    last_obs = np.full(posts.m, -1, dtype=np.int64)
    final = np.zeros((posts.m, 4), dtype=np.int64)
    for c in range(ch.n):
        lo, hi = np.searchsorted(posts.ch, [c, c + 1])
        if hi == lo:
            continue
        sl = slice(lo, hi)
        obs_s, counts, mask = _channel_snapshots(c, ch, posts, sl, base_views[sl], grid, cum, clock, rng)
        n_obs = mask.sum(axis=1)
        seen = n_obs > 0
        rows = np.arange(hi - lo)[seen]
        last_obs[lo:hi][seen] = obs_s[rows, n_obs[seen] - 1]
        final[lo:hi][seen] = counts[rows, n_obs[seen] - 1]
        pid = np.broadcast_to(posts.post_id[sl, None], mask.shape)
        parts.append((np.full(mask.sum(), ch.ids[c]), pid[mask], obs_s[mask], counts[mask]))
    if not parts:
        parts.append(tuple(np.zeros((0, 4) if i == 3 else 0, np.int64) for i in range(4)))
    return _Snapshots(
        ch=np.concatenate([p[0] for p in parts]).astype(np.int64),
        post_id=np.concatenate([p[1] for p in parts]).astype(np.int64),
        obs_s=np.concatenate([p[2] for p in parts]).astype(np.int64),
        counts=[np.concatenate([p[3][:, j] for p in parts]).astype(np.int64) for j in range(4)],
        last_obs_s=last_obs,
        final=final,
    )


# ---------------------------------------------------------------------------- users


def _persona_hour_pmf() -> np.ndarray:
    """(personas, 24) probability of being active in each UTC hour."""
    hours = np.arange(24) + 0.5
    pmf = np.full((len(PERSONAS), 24), 0.02)
    for p, bumps in enumerate(PERSONA_HOURS):
        for mu, sd, weight in bumps:
            pmf[p] += weight * _circular_bump(hours, mu, sd)
    return pmf / pmf.sum(axis=1, keepdims=True)


@dataclass
class _Users:
    """Per-user behaviour parameters (arrays indexed by user position)."""

    ids: np.ndarray
    persona: np.ndarray
    secondary: np.ndarray  # a second persona some of the user's activity follows
    mix_w: np.ndarray  # share of activity following the secondary persona (often 0)
    weekday_noise: np.ndarray  # (u, 7) individual tilt of the persona's weekday curve
    hour_shift: np.ndarray
    background: np.ndarray  # share of interactions at random hours
    action_p: np.ndarray  # (u, 3) individual action mix around the persona's
    follows: np.ndarray  # (u, max_follow) channel positions
    n_follow: np.ndarray
    target: np.ndarray  # interactions wanted


def _make_users(cfg: SyntheticConfig, ch: _Channels, rng: np.random.Generator) -> _Users:
    """Personas with individual noise (and some mixed users), and the channels they follow.

    The noise keeps personas recoverable from behaviour but not trivially separable.
    """
    u = cfg.n_users
    persona = rng.choice(len(PERSONAS), size=u, p=PERSONA_SHARES)
    secondary = (persona + rng.integers(1, len(PERSONAS), u)) % len(PERSONAS)
    mix_w = np.where(rng.random(u) < 0.3, rng.uniform(0.15, 0.4, u), 0.0)
    alpha = PERSONA_ACTIONS[persona] * 12 + 0.3
    action_p = rng.gamma(alpha)
    action_p /= action_p.sum(axis=1, keepdims=True)
    # follow channels that match the persona's taste (bigger channels more likely)
    taste = ch.topic_mix @ PERSONA_TOPICS.T  # (channels, personas)
    weight = np.sqrt(ch.subs0)[None, :] * taste.T[persona]
    commenter = persona == PERSONAS.index("active_commenter")
    weight[commenter] *= np.where(ch.reply_rate > 0, 1.0, 0.05)[None, :]
    keys = np.log(weight) + rng.gumbel(size=weight.shape)
    max_follow = min(ch.n, 5)
    follows = np.argsort(-keys, axis=1)[:, :max_follow]
    n_follow = np.minimum(1 + rng.binomial(4, 0.4, u), ch.n)
    target = 20 + np.floor(_lognormal(rng, 25.0, 0.7, u)).astype(np.int64)
    return _Users(
        ids=np.arange(100_001, 100_001 + u, dtype=np.int64),
        persona=persona,
        secondary=secondary,
        mix_w=mix_w,
        weekday_noise=np.exp(0.3 * rng.standard_normal((u, 7))),
        hour_shift=rng.normal(0.0, 1.2, u),
        background=rng.uniform(0.1, 0.35, u),
        action_p=action_p,
        follows=follows,
        n_follow=n_follow,
        target=target,
    )


def _sample_pmf(pmf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Categorical draw from one shared pmf (cheaper than a per-row CDF)."""
    cdf = np.cumsum(pmf) / pmf.sum()
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(pmf) - 1)


def _interaction_times(
    users: _Users, uidx: np.ndarray, clock: _Clock, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """When each candidate interaction happens, and which persona's rhythm drove it."""
    k = len(uidx)
    use_secondary = rng.random(k) < users.mix_w[uidx]
    persona = np.where(use_secondary, users.secondary[uidx], users.persona[uidx])
    weekday_p = PERSONA_WEEKDAYS[persona] * users.weekday_noise[uidx]
    weekday = _inverse_cdf(weekday_p, rng.random(k))
    first = (weekday - clock.weekday0) % 7
    n_of = (clock.n_days - first + 6) // 7
    day = first + 7 * np.floor(rng.random(k) * n_of).astype(np.int64)
    hour_pmf = _persona_hour_pmf()
    hour = np.empty(k)
    u_hour = rng.random(k)
    for p in range(len(PERSONAS)):  # loop over personas only
        sel = persona == p
        hour[sel] = _sample_pmf(hour_pmf[p], u_hour[sel])
    hour = (hour + rng.random(k) + users.hour_shift[uidx]) % 24
    background = rng.random(k) < users.background[uidx]
    hour = np.where(background, rng.uniform(0, 24, k), hour)
    t_s = (day * 86400 + np.floor(hour * 3600)).astype(np.int64)
    return t_s, np.where(use_secondary, persona, -1)


def _candidate_interactions(
    users: _Users,
    uidx: np.ndarray,
    posts: _Posts,
    snaps: _Snapshots,
    clock: _Clock,
    rng: np.random.Generator,
) -> tuple[np.ndarray, ...]:
    """Accepted (user, post index, time, action) for the candidate users ``uidx``.

    A user is active at a time drawn from their persona's rhythm, opens a followed
    channel and acts on the latest (or a slightly older) post there; recency and topic
    taste decide whether they act at all.
    """
    k = len(uidx)
    t_s, secondary = _interaction_times(users, uidx, clock, rng)
    follow_pos = np.floor(rng.random(k) * users.n_follow[uidx]).astype(np.int64)
    c = users.follows[uidx, follow_pos]
    key = posts.ch.astype(np.int64) * (1 << 40) + posts.pub_s
    lag = rng.geometric(0.55, k) - 1
    idx = np.searchsorted(key, c.astype(np.int64) * (1 << 40) + t_s, side="left") - 1 - lag
    idx = np.maximum(idx, 0)
    delay_h = (t_s - posts.pub_s[idx]) / 3600.0
    persona = users.persona[uidx]
    taste = PERSONA_TOPICS[persona, posts.topic[idx]] / PERSONA_TOPICS.max(axis=1)[persona]
    ok = (posts.ch[idx] == c) & (delay_h > 0) & (delay_h <= 72) & (t_s <= snaps.last_obs_s[idx])
    ok &= rng.random(k) < np.exp(-delay_h / 24.0) * taste
    action_p = np.where(
        (secondary >= 0)[:, None], PERSONA_ACTIONS[np.maximum(secondary, 0)], users.action_p[uidx]
    )
    action = _inverse_cdf(action_p, rng.random(k))
    return uidx[ok], idx[ok], t_s[ok], action[ok]


def _make_interactions(
    users: _Users,
    ch: _Channels,
    posts: _Posts,
    snaps: _Snapshots,
    clock: _Clock,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Sample who did what when, consistent with the posts' observed counters.

    Candidates are drawn generously (users in chunks, to bound memory); a user reacts at
    most once per post, rows beyond a post's final counter for that action are dropped,
    and each user keeps a random subset of at most their target.
    """
    n_users = len(users.ids)
    if n_users == 0 or posts.m == 0:
        return _empty_interactions()
    chunks = []
    for lo in range(0, n_users, 2000):  # loop over user chunks only
        ids = np.arange(lo, min(lo + 2000, n_users))
        uidx = np.repeat(ids, users.target[ids] * 10)
        chunks.append(_candidate_interactions(users, uidx, posts, snaps, clock, rng))
    uidx, idx, t_s, action = (np.concatenate(parts) for parts in zip(*chunks, strict=True))

    # one reaction per user and post; no exact duplicate keys
    pair = (idx.astype(np.int64) * n_users + uidx) * 3 + action
    order = np.lexsort((t_s, pair))
    same_pair = np.r_[False, pair[order][1:] == pair[order][:-1]]
    same_time = np.r_[False, t_s[order][1:] == t_s[order][:-1]]
    order = order[~(same_pair & ((action[order] == 0) | same_time))]
    uidx, idx, t_s, action = uidx[order], idx[order], t_s[order], action[order]
    # never more rows than the post's final counter for that action
    cap = snaps.final[idx, np.array([3, 2, 1])[action]]  # reactions, replies, forwards
    group = idx.astype(np.int64) * 3 + action
    order = np.lexsort((rng.random(len(group)), group))
    order = order[_group_rank(group[order]) < cap[order]]
    uidx, idx, t_s, action = uidx[order], idx[order], t_s[order], action[order]
    # finally at most `target` per user, a random subset of what survived
    order = np.lexsort((rng.random(len(uidx)), uidx))
    order = order[_group_rank(uidx[order]) < users.target[uidx[order]]]
    uidx, idx, t_s, action = uidx[order], idx[order], t_s[order], action[order]

    channel_id, post_id, user_id = ch.ids[posts.ch[idx]], posts.post_id[idx], users.ids[uidx]
    order = np.lexsort((action, user_id, t_s, post_id, channel_id))
    return pd.DataFrame(
        {
            "channel_id": channel_id[order],
            "post_id": post_id[order],
            "user_id": user_id[order],
            "action": np.asarray(ACTIONS, dtype=object)[action[order]],
            "occurred_at": clock.timestamps(t_s[order]),
        },
        copy=False,
    )


# ------------------------------------------------------------------------ assembly


def _empty_interactions() -> pd.DataFrame:
    """Typed empty raw.interactions (no users or no posts)."""
    return pd.DataFrame(
        {
            "channel_id": pd.Series(dtype="int64"),
            "post_id": pd.Series(dtype="int64"),
            "user_id": pd.Series(dtype="int64"),
            "action": pd.Series(dtype=object),
            "occurred_at": pd.Series(dtype="datetime64[ns]"),
        }
    )


def _channel_frames(ch: _Channels, clock: _Clock) -> tuple[pd.DataFrame, ...]:
    """raw.channels, truth.channels and truth.slot_effects."""
    channels = pd.DataFrame(
        {
            "channel_id": ch.ids,
            "username": ch.usernames,
            "title": ch.titles,
            "created_at": clock.timestamps(ch.created_s),
        }
    )
    best = np.argmax(ch.slot_effect, axis=1)
    truth = pd.DataFrame(
        {
            "channel_id": ch.ids,
            "best_weekday": (best // 24).astype(np.int64),
            "best_hour": (best % 24).astype(np.int64),
            "is_ghost": ch.is_ghost,
            "ghost_share": ch.ghost_share,
            "base_reach": ch.reach,
            "half_life_hours": _half_life(ch.tau, ch.shape_k, ch.slow_w),
        }
    )
    slots = pd.DataFrame(
        {
            "channel_id": np.repeat(ch.ids, 168),
            "weekday": np.tile(np.repeat(np.arange(7), 24), ch.n).astype(np.int64),
            "hour": np.tile(np.arange(24), 7 * ch.n).astype(np.int64),
            "effect": ch.slot_effect.ravel(),
        }
    )
    return channels, truth, slots


def _post_frames(ch: _Channels, posts: _Posts, clock: _Clock) -> tuple[pd.DataFrame, ...]:
    """raw.posts and truth.posts."""
    channel_id = ch.ids[posts.ch]
    raw = pd.DataFrame(
        {
            "channel_id": channel_id,
            "post_id": posts.post_id,
            "published_at": clock.timestamps(posts.pub_s),
            "text": posts.text,
            "media_type": np.asarray(MEDIA_TYPES, dtype=object)[posts.media],
        }
    )
    truth = pd.DataFrame(
        {
            "channel_id": channel_id,
            "post_id": posts.post_id,
            "topic": np.asarray(TOPICS, dtype=object)[posts.topic],
            "quality": posts.quality,
        }
    )
    return raw, truth


def _snapshot_frame(snaps: _Snapshots, clock: _Clock) -> pd.DataFrame:
    """raw.post_snapshots, built once from the concatenated column arrays."""
    return pd.DataFrame(
        {
            "channel_id": snaps.ch,
            "post_id": snaps.post_id,
            "observed_at": clock.timestamps(snaps.obs_s),
            "views": snaps.counts[0],
            "forwards": snaps.counts[1],
            "replies": snaps.counts[2],
            "reactions": snaps.counts[3],
        },
        copy=False,  # 10 M+ rows: keep one array per column, no consolidation copy
    )


def _daily_frame(ch: _Channels, subs: np.ndarray, clock: _Clock) -> pd.DataFrame:
    """raw.channel_daily: one row per channel and calendar day of the window."""
    days = clock.timestamps(np.arange(clock.n_days, dtype=np.int64) * 86400)
    return pd.DataFrame(
        {
            "channel_id": np.repeat(ch.ids, clock.n_days),
            "day": np.tile(days, ch.n),
            "subscribers": np.round(subs).astype(np.int64).ravel(),
        }
    )


def _clock(cfg: SyntheticConfig) -> _Clock:
    """The window ending at ``cfg.end``, starting at the midnight ``n_days`` before it."""
    end = np.datetime64(cfg.end.replace(tzinfo=None), "s")
    start_day = (end - np.timedelta64(cfg.n_days * 86400, "s")).astype("datetime64[D]")
    start = start_day.astype("datetime64[s]")
    end_s = int((end - start) / np.timedelta64(1, "s"))
    weekday0 = int((start_day.astype(np.int64) + 3) % 7)  # 1970-01-01 was a Thursday
    return _Clock(start=start, end_s=end_s, n_days=-(-end_s // 86400), weekday0=weekday0)


def generate(config: SyntheticConfig) -> SyntheticWorld:
    """Build the whole synthetic world for ``config``; same config -> identical frames."""
    if config.n_channels < 1 or config.n_days < 1 or config.n_users < 0:
        raise ValueError(f"invalid synthetic config: {config}")
    rngs = _streams(config.seed)
    clock = _clock(config)
    ch = _make_channels(config, rngs["channels"])

    post_ch, post_id, pub_s, topic, media, hooks, text = _make_posts(ch, clock, rngs["posts"], rngs["text"])
    day = pub_s // 86400
    how = clock.weekday(day) * 24 + (pub_s % 86400) // 3600
    text_len = np.fromiter((len(t) for t in text), dtype=np.float64, count=len(text))
    effects = _post_effects(ch, post_ch, how, topic, media, hooks, text_len, rngs["effects"])
    posts = _Posts(
        ch=post_ch,
        post_id=post_id,
        pub_s=pub_s,
        day=day,
        how=how,
        topic=topic,
        media=media,
        hooks=hooks,
        text=text,
        **effects,
    )

    grid, cum = _cumulative_activity(ch, clock)
    ratio7 = _seven_day_ratio(ch, posts, grid, cum)
    subs = _simulate_subscribers(ch, posts, ratio7, clock, rngs["subs"])
    snaps = _make_snapshots(ch, posts, subs, (grid, cum), clock, rngs["snapshots"])
    users = _make_users(config, ch, rngs["users"])
    interactions = _make_interactions(users, ch, posts, snaps, clock, rngs["acts"])

    channels, truth_channels, truth_slots = _channel_frames(ch, clock)
    raw_posts, truth_posts = _post_frames(ch, posts, clock)
    return SyntheticWorld(
        channels=channels,
        posts=raw_posts,
        post_snapshots=_snapshot_frame(snaps, clock),
        channel_daily=_daily_frame(ch, subs, clock),
        interactions=interactions,
        truth_channels=truth_channels,
        truth_slot_effects=truth_slots,
        truth_topics=pd.DataFrame({"topic": list(TOPICS), "virality": TOPIC_VIRALITY}),
        truth_posts=truth_posts,
        truth_users=pd.DataFrame(
            {"user_id": users.ids, "persona": np.asarray(PERSONAS, dtype=object)[users.persona]}
        ),
    )
