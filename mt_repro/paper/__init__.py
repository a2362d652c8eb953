"""The paper's tables as data, the runs each table needs, and the comparison of runs with it."""
