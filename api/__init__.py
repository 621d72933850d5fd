"""The HTTP API: thin routers over the services (KPIs and demonstrations arrive with issue 3)."""
