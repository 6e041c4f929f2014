"""Actuators: where a Decision touches a real fleet. The only package that imports kubernetes (or talks to
Ray Serve); everything here sits behind the ReplicaActuator protocol in base.py."""
