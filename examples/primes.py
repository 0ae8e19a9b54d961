# A few seconds of CPU: handy to put the cluster under load.
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
sieve = bytearray([1]) * (n + 1)
sieve[0:2] = b"\0\0"
for i in range(2, int(n ** 0.5) + 1):
    if sieve[i]:
        sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
print(sum(sieve), "primes below", n)
