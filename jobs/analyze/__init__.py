"""Analyze stage: every EvalResult of an experiment → results.csv, contrasts.csv, figures and a report.

Public entry points: :func:`jobs.analyze.run.run` (the stage) and the pure functions in
:mod:`jobs.analyze.core` and :mod:`jobs.analyze.stats` that the tests exercise.
"""
