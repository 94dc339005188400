"""Entry point of the grading child process (see :mod:`bilevel_teaching.runner`).

    python -m bilevel_teaching._child <assignment> <file> <first check> <seed>
"""

import sys

from bilevel_teaching.runner import child_main

if __name__ == "__main__":
    child_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
