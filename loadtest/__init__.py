"""loadtest: Locust suites and benchmark harnesses. They speak HTTP only, never import reel."""
