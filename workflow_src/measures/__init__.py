"""One module per metric the measuring job measures: its declaration (METRIC, read by
workflow_src/registry.py without importing the module) and the function that measures one
network. How to add one: docs/architecture.md ("How to add a metric")."""
