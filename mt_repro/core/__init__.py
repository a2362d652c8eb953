"""The bottom layer: errors, file writing, random generators, ramps and the types every layer
shares. It imports nothing else of mt_repro."""
