#!/bin/sh
# The image's start-up path; the stand-in's server (see standin.py).
exec python3 /home/nacos/standin/standin.py
