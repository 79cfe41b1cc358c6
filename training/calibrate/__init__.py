"""``calibrate``: a schedule for one model from the model alone (no reward model, no data
set): the command's flags (:mod:`.args`), the runs on the testbed and on a ComfyUI model
(:mod:`.run`, :mod:`.comfy_run`) and the evaluation table (:mod:`.report`). The method itself
is the pure-torch :mod:`calibration` package."""
