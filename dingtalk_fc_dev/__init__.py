"""Developer kit: test kit, event catalog, local server and command-line tool.

Not part of the function package: nothing here is deployed.
"""
