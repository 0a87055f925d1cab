"""Public entropy for the chart game: drand beacons (checked with BLS12-381) and a local beacon
with its own key for machines without internet (the default here). See `cashmarkets.fairness`."""
