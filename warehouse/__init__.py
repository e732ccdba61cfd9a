"""Warehouse logic with no Dagster in it: schema, data sources, feature SQL.

Assets in ``channel_assets`` call into this package; notebooks and tests can too.
"""
