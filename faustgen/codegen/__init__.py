"""Code generation: the IR lowered to kernel calls (emit), the arena planned (memory), the C
written through the Jinja2 templates (render, literals)."""
