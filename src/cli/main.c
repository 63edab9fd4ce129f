#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--version")) {
        puts("moe2onnx 0.1.0");
        return 0;
    }
    fputs("moe2onnx: command line under construction\n", stderr);
    return 2;
}
