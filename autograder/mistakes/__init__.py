"""Known mistakes as runnable buggy implementations, one module per ``mhsa_lib`` module.

The checks run them on the learner's inputs to recognise a mistake by its output, and the
test suite runs every check against them to prove each one loses points and is named.
Each entry (:class:`autograder.frame.mistakes.Mistake`): an id, the wrong implementation, the
advice its diagnosis gives the learner, and flags (e.g. a mistake whose outputs equal a correct
answer's, which only another probe can catch).
"""
