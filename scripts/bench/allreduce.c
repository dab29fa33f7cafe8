/* osu_allreduce-style latency for small messages: for each size from 4 bytes to 1 KiB (floats,
 * MPI_SUM), WARMUP untimed allreduces then ITERS timed ones after a barrier; each rank's mean
 * time per call is averaged over the ranks. Rank 0 prints "SIZE MICROSECONDS" per size.
 * Built with mpicc by scripts/bench/hpc.sh. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

enum { MAX_FLOATS = 256, WARMUP = 200, ITERS = 2000 };

int main(int argc, char **argv) {
    int rank, size;
    float in[MAX_FLOATS], out[MAX_FLOATS];
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    for (int i = 0; i < MAX_FLOATS; i++)
        in[i] = (float)i;
    for (int n = 1; n <= MAX_FLOATS; n *= 2) {
        for (int i = 0; i < WARMUP; i++)
            MPI_Allreduce(in, out, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        for (int i = 0; i < ITERS; i++)
            MPI_Allreduce(in, out, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        double mine = (MPI_Wtime() - t0) * 1e6 / ITERS, sum;
        MPI_Reduce(&mine, &sum, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        if (rank == 0)
            printf("%zu %.2f\n", n * sizeof(float), sum / size);
    }
    MPI_Finalize();
    return 0;
}
