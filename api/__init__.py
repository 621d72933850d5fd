"""The HTTP API: thin routers over the services and repositories: the device catalog, demonstrations and their
plans, KPIs and comparisons, reports, evidence bundles, organisations and API keys."""
