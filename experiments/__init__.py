"""Experiments, reports and their figures: not part of the installed package.

Run from the repository root, e.g. ``python -m experiments.reproduction --scale quick --out
reports/``. They use ``lrgmm``'s public API (and, for the reports, a few of each other's helpers);
nothing in ``lrgmm`` imports them.
"""
