"""`bench report`: tables, significance tests, figures and provenance from run folders.

Modules, one job each:

- ``runs``: read run folders (rows, configs, losses, profiles, timings, models).
- ``aggregate``: experiments and Dice at the (client, fold) and client levels.
- ``stats``: paired tests and bootstrap confidence intervals.
- ``analysis``: summaries, CIs, ranks and tests for every table cell, computed once.
- ``published`` (numbers in ``reference_data``): Wu et al. 2021, Chaitanya et al. 2020.
- ``names``: method display names (registry ids in footnotes).
- ``cost``: pretraining cost per client and the Pareto front of accuracy against it.
- ``tables``: the report's tables as a format-neutral model (``document``).
- ``markdown``, ``latex``, ``html``: renderers of that model.
- ``figures``, ``qualitative``: the figures.
- ``provenance``: where the numbers come from.
- ``build``: puts it together; ``cli``: the ``bench report`` subcommand.
"""
