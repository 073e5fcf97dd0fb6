"""After the first deploy: reviewing served requests and turning them into the next training set.

:mod:`~taskfit.lifecycle.reviews` keeps the review state (what was queued, every correction),
:mod:`~taskfit.lifecycle.queue` picks requests worth a person's time and reads their verdicts back,
:mod:`~taskfit.lifecycle.from_log` turns reviewed requests into a data snapshot.
"""
