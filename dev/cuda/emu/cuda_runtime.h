// Stands in for CUDA's cuda_runtime.h when a .cu file is built for the CPU emulator
// (dev/cuda/emu/cuda_emu.h; the build puts this folder first on the include path).
#include "cuda_emu.h"
