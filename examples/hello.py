import platform
print("Hello from runbox!", "Python", platform.python_version())
