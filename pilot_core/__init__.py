"""The pure core of pilot-telemetry: the device contract, device profiles and
line-protocol encoding. Nothing in this package performs I/O."""
