"""`tfbuild diff`: what a change does to every target, from the locks' summaries.

`git_lock` reads the lock at a revision through git, `compare` sets two locks side by side
target by target, `gate` applies the `--fail-on` rules, `show` prints the table, markdown or
JSON, and `command` is the command's flow for the CLI. No TensorFlow anywhere.
"""
