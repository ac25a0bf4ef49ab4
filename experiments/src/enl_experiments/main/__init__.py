"""The main job: baseline vs +3ENL TD on the embedded dataset or COCO.

:mod:`~enl_experiments.main.cli` is the command line (``python -m
enl_experiments.main``); it runs each framework in a child process
(:mod:`~enl_experiments.main.garden_job` for Model Garden,
:mod:`~enl_experiments.main.torch_job` for torchvision, through
:mod:`~enl_experiments.main.runners`) and scores and reports in this process
(:mod:`~enl_experiments.main.evaluation`, :mod:`~enl_experiments.main.report`,
:mod:`~enl_experiments.main.figures`), which never imports a framework.
"""
