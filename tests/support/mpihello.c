/* An MPI job's checks, one process per rank: rank and size, an allreduce of rank+1 over all
 * ranks (size*(size+1)/2), and shared memory between the ranks' containers (`--ipc host`):
 * rank 0 makes a POSIX shared memory object, broadcasts its name, and every rank reads the
 * value back through /dev/shm. Prints one line per rank. */
#include <fcntl.h>
#include <mpi.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int shm_value(int rank, const char *name) {
    int fd = shm_open(name, rank == 0 ? O_CREAT | O_RDWR : O_RDONLY, 0600);
    if (fd < 0)
        return -1;
    int v = -1;
    if (rank == 0) {
        v = 4242;
        if (write(fd, &v, sizeof v) != sizeof v)
            v = -1;
    } else if (read(fd, &v, sizeof v) != sizeof v) {
        v = -1;
    }
    close(fd);
    return v;
}

int main(int argc, char **argv) {
    int rank, size, sum, v, seen, all_seen;
    char name[64];
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    v = rank + 1;
    MPI_Allreduce(&v, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        snprintf(name, sizeof name, "/nook-mpi-%ld-%ld", (long)t.tv_sec, t.tv_nsec);
    }
    MPI_Bcast(name, sizeof name, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (rank == 0)
        shm_value(0, name);
    MPI_Barrier(MPI_COMM_WORLD);
    seen = rank == 0 || shm_value(rank, name) == 4242;
    MPI_Allreduce(&seen, &all_seen, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        shm_unlink(name);
    printf("rank %d of %d sum %d shm %d\n", rank, size, sum, all_seen);
    MPI_Finalize();
    return 0;
}
