#include "creator.h"

int main(int argc, char **argv)
{
    return service_main(argc, argv, &creator_service);
}
