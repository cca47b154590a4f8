"""The two daemons (the sidecar, the router-side variant), the skeleton they share, and what serves them:
status, metrics, logs, sd_notify, the maintenance state. Imports: every layer below (docs/architecture.md)."""
