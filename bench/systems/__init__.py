"""The queue systems the benchmark drives, one module each (see base.QueueSystem).

Import-free on purpose: worker processes import their task module from this package.
"""
