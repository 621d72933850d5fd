"""The HTTP API: thin routers over the services and repositories (KPI results arrive with issue 3)."""
