"""Shared pieces every reel service uses: settings from flags/env, logging, metrics, serving."""
