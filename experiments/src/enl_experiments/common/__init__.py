"""Utilities shared by the main job and the bench; none imports a framework.

- :mod:`~enl_experiments.common.proc`: run a child process, its output teed to a log;
- :mod:`~enl_experiments.common.machine`: what machine the numbers come from;
- :mod:`~enl_experiments.common.markdown`: Markdown tables.
"""
