"""The demo job (`faustgen demo`) and what it needs: seeded models (zoo), the datasets shipped
on the machine, and training. `faustgen.zoo` is this package's zoo module."""
