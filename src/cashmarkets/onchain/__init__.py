"""Chain adapters: on-chain commitments and per-round seeds for the chart game (`aptos`)."""
