/* netprobe: the network side of nook's tests, static so it runs in any image.
 *
 *   netprobe udp-echo PORT N        echo N datagrams received on 0.0.0.0:PORT
 *   netprobe tcp-peer PORT          accept one connection on PORT, write "peer ADDR\n" to it
 *   netprobe connect HOST PORT MS   TCP connect with a timeout; print what the server sends,
 *                                   or "failed: ERROR"; exit 0 when connected
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int listener(int type, int port) {
    int s = socket(AF_INET, type, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("bind");
        exit(2);
    }
    if (type == SOCK_STREAM && listen(s, 8) < 0) {
        perror("listen");
        exit(2);
    }
    return s;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "udp-echo")) {
        int s = listener(SOCK_DGRAM, atoi(argv[2]));
        for (int i = 0; i < atoi(argv[3]); i++) {
            char buf[2048];
            struct sockaddr_in from;
            socklen_t len = sizeof from;
            ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
            if (n < 0)
                return 2;
            sendto(s, buf, n, 0, (struct sockaddr *)&from, len);
        }
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "tcp-peer")) {
        int s = listener(SOCK_STREAM, atoi(argv[2]));
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        int c = accept(s, (struct sockaddr *)&from, &len);
        if (c < 0)
            return 2;
        dprintf(c, "peer %s\n", inet_ntoa(from.sin_addr));
        close(c);
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "connect")) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) {
            printf("failed: bad address\n");
            return 1;
        }
        int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (connect(s, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
            printf("failed: %s\n", strerror(errno));
            return 1;
        }
        struct pollfd p = {.fd = s, .events = POLLOUT};
        if (poll(&p, 1, atoi(argv[4])) != 1) {
            printf("failed: timed out\n");
            return 1;
        }
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            printf("failed: %s\n", strerror(err));
            return 1;
        }
        fcntl(s, F_SETFL, 0);
        char buf[512];
        ssize_t n = read(s, buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = 0;
        printf("connected: %s", buf);
        return 0;
    }
    fprintf(stderr, "usage: netprobe udp-echo PORT N | tcp-peer PORT | connect HOST PORT MS\n");
    return 2;
}
