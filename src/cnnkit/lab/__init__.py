"""``cnnkit lab``: the lecture's claims, reproduced on real data with one command.

Each experiment (:mod:`cnnkit.lab.experiments`) states a claim of the lecture, trains its
arms with the trainer of ``cnnkit train`` (:mod:`cnnkit.lab.runner`), measures, judges the
claim by a stated rule (reproduced, partly, not reproduced, inconclusive) and draws its
figures; :mod:`cnnkit.lab.report` renders every result as a static HTML page and Markdown.
Importing this package trains, reads and allocates nothing.
"""
