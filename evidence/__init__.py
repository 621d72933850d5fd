"""Evidence bundles: export a demonstration's result with everything needed to recompute it, and verify one
offline, with no service running."""
