"""Known mistakes as runnable buggy implementations, one module per ``mhsa_lib`` module.

The checks run them on the learner's inputs to recognise a mistake by its output, and the
test suite runs every check against them to prove each one loses points and is named.
Each entry: the row of ../shared/MISTAKES.md it stands for, the function, and the message.
"""
