#include <iostream>
#include <string>

int main() {
    std::string name;
    std::cout << "What is your name? " << std::flush;
    if (!std::getline(std::cin, name) || name.empty()) name = "stranger";
    std::cout << "Hello, " << name << ", from runbox in C++!" << std::endl;
}
