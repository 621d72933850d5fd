"""The `pilot` command line: one entry point for every service and tool."""
