"""The projector, an application service next to the store: it follows the command log with its
own engine replica and writes the read models, exactly once (projector.py). The ledger's rows
are its base; each product's batch (leverage.py, spot.py, chart.py, or the product's own
package) is named by its ProductModule.projection."""
