"""Load and capacity on k6: profiles, the scripts they become, the run, the results.

``profiles`` (the registry of named shapes and their typed parameters), ``thresholds`` (the
bounds a run must meet, written as k6 thresholds), ``script`` (a plan as a k6 script), ``k6``
(finding the binary), ``placement`` (where k6 sends from and to, the nodes' CPU quotas),
``k6_process`` (k6 started, stopped and removed), ``runner`` (a run: observers, the live line),
``results`` (k6's CSV and summary read back as ``RequestRecord``s, the verdict), ``observe``
(CPU and memory per container, saturation), ``report`` (figures, result.json, the lines) and
``compare`` (the checklist's before and after).
"""
