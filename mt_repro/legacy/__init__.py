"""Users of the original code, moved over: its command line (``main_flags``), its checkpoints
(``reading``: read without running them; ``normalize``: in our layout; ``port``: checked against
an architecture and written as ours; ``inspect``: described), and its source tree
(``patching``, with the rules of ``legacy_patches``). Its msgpack logs are ``mt_repro.logs``'."""
