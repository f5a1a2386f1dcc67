"""Multi-seed studies on the procedural data: plan, resumable runner, CSV of results,
statistics, learning-curve plots and the docs/results.md sections (``densemtl study``)."""
