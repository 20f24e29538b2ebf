"""Changes to the fan-out hot path, measured by `bench/run.py experiments` next to the unchanged server.

Nothing here is used by the product. Each module is a candidate patch in a
form that a benchmark run can switch on without editing the product code.
"""
