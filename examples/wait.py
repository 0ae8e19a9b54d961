# Waits a second and a half without using the CPU: load that slaves help with on any
# machine (the autoscaler starts slaves on the master's engine only while its CPU has room).
import time

time.sleep(1.5)
print("waited 1.5 s")
