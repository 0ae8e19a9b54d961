#include <stdio.h>

int main(void) {
    printf("this line has no semicolon\n")
    return 0;
}
