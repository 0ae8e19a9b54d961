#include <stdio.h>

int main(void) {
    printf("Hello from runbox, in C!\n");
    return 0;
}
