"""The KPI engine: demonstrations evaluated from stored device-hours."""
