"""The pure core of pilot-telemetry: the device contract, device profiles, validation and line-protocol
encoding, access rules, demonstration plans, time accounting, KPIs and their comparison statistics, and the
evidence bundle format. Nothing in this package performs I/O."""
