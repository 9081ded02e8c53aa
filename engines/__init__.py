"""Model runtimes: the emotion network (``emotion/``) and the VLM engines (``vlm/``).

A layer below the edge and the reasoner: nothing here imports either, so both can use the engines
without pulling in the other's dependencies.
"""
