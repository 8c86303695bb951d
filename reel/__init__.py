"""reel's own package, in two layers (the import-linter contracts in pyproject.toml hold them).

The ground, which every service may import and which imports no service: `reel.settings` (flags
and their REEL_<COMMAND>_<FLAG> variables), `reel.logs`, `reel.metrics`, `reel.http` (HTTP
semantics the origin and the edge share), `reel.service` (serving an app until a signal) and
`reel.supervisor` (child processes restarted on failure).

The top, above every service: `reel.cli` (collects each service's subcommand), `reel.up` (the
whole stack on one machine) and `reel.loadtest` (runs the Locust suites as a program).
"""
