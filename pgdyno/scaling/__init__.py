"""Scaling: dynos spinning dynos. The dispatcher scales a type up (0→N); workers scale it to 0.

- `policy.py`: pure decisions (rules, the wanted quantity) from queue load; no I/O, no clock;
- `state.py`: every statement on the scaling tables (rules, formations, load, scale events,
  the status view);
- `scaler.py`: `Scaler`, the one place that scales: lock the type's row, read the load,
  decide with the policy, call the formation backend, record the event;
- `dispatcher.py`: `Dispatcher`, LISTEN → debounce → `Scaler.scale_up`, with leadership and a
  safety-net reconcile;
- `idle.py`: `ScaleDownWhenIdle`, the worker's idle callback → `Scaler.scale_to_zero`;
- `formation/`: the `FormationBackend` protocol and its implementations (Heroku Platform API,
  an in-memory fake).
"""
