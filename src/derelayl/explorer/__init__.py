"""``derelayl explorer``: a read-only web view of a chain — rounds, blocks, participants,
models and their lineage, money — that follows the chain while it grows (``index``: the
replay; ``app``: the HTTP pages and JSON API; ``static/``: the page code)."""
