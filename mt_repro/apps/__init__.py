"""What the commands do, above the engine: the training commands (``training``), the digits demo
(``digits_demo``), ``mt-repro bench`` (``bench``) and ``mt-repro evaluate`` (``evaluate``). The
paper's tables and their comparison are ``mt_repro.paper``, in the same layer."""
